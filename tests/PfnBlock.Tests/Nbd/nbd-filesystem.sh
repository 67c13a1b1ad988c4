#!/usr/bin/env bash
# A real kernel filesystem on a pfnblock export: nbdfuse shows the export as a file, a loop device
# makes it a block device, ext4 goes on it. A tree is copied and verified by sha256, e2fsck -fn
# must find it clean, and it must verify again after a clean server restart and after a SIGKILL of
# the server taken while the filesystem was unmounted and flushed.
# Usage: nbd-filesystem.sh DOTNET CLI_DLL [NAMESPACE_MB] [TREE_MB]
# Needs root, loop devices and /dev/fuse: without them it fails (it never skips). Everything it
# sets up (mounts, loop device, nbdfuse, the server, files) is undone on every exit path.
set -euo pipefail
dotnet_host=$1 cli=$2 ns_mb=${3:-64} tree_mb=${4:-24}

fail() { echo "FAIL: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || fail "needs root (losetup, mount)"
[ -c /dev/fuse ] || fail "/dev/fuse is missing"
for tool in nbdfuse losetup mkfs.ext4 e2fsck mount umount mountpoint blockdev sha256sum; do
  command -v "$tool" >/dev/null || fail "$tool is not installed"
done

work=$(mktemp -d /tmp/pfnblock-fs.XXXXXX)
ns=/dev/shm/pfnblock-fs-$$-$RANDOM
sock=$work/nbd.sock fuse=$work/fuse mnt=$work/mnt src=$work/src
mkdir "$fuse" "$mnt" "$src"
server_pid="" fuse_pid="" loop="" fs_mounted=0

cleanup() {
  local rc=$?
  set +e
  [ "$fs_mounted" -eq 1 ] && umount "$mnt"
  [ -n "$loop" ] && losetup -d "$loop"
  mountpoint -q "$fuse" && { umount "$fuse" || umount -l "$fuse"; }
  [ -n "$fuse_pid" ] && { kill "$fuse_pid" 2>/dev/null; wait "$fuse_pid" 2>/dev/null; }
  [ -n "$server_pid" ] && { kill -KILL "$server_pid" 2>/dev/null; wait "$server_pid" 2>/dev/null; }
  [ "$rc" -ne 0 ] && [ -f "$work/server.log" ] && { echo "--- server log" >&2; tail -n 20 "$work/server.log" >&2; }
  rm -rf "$work" "$ns"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 1' INT TERM HUP

start_server() {
  # Its control socket in $work too: kill_server's SIGKILL leaves it behind (the default one, in
  # the data directory /dev/shm/pfnblock, would outlive the run).
  "$dotnet_host" "$cli" serve --export "fs=pmem:$ns" --listen "unix:$sock" --control "$work/control.sock" >"$work/server.log" 2>&1 &
  server_pid=$!
  for _ in $(seq 600); do
    grep -q '^serving' "$work/server.log" && return 0
    kill -0 "$server_pid" 2>/dev/null || fail "pfnblock serve exited: $(cat "$work/server.log")"
    sleep 0.1
  done
  fail "pfnblock serve did not start within 60 s"
}

stop_server() { # SIGTERM: drain, flush, exit 0
  kill -TERM "$server_pid"
  wait "$server_pid" || fail "pfnblock serve exited with $? on SIGTERM"
  server_pid=""
}

kill_server() { # SIGKILL: no drain, no flush
  kill -KILL "$server_pid"
  wait "$server_pid" 2>/dev/null || true
  server_pid=""
}

attach() {
  nbdfuse "$fuse/disk" "nbd+unix:///fs?socket=$sock" &
  fuse_pid=$!
  for _ in $(seq 200); do [ -f "$fuse/disk" ] && break; sleep 0.1; done
  [ -f "$fuse/disk" ] || fail "nbdfuse did not show the export within 20 s"
  loop=$(losetup --find --show "$fuse/disk")
  # Never format someone else's device: the loop device must be backed by our nbdfuse file.
  [ "$(losetup -n -O BACK-FILE "$loop" | sed 's/[[:space:]]*$//')" = "$fuse/disk" ] || fail "$loop is not backed by $fuse/disk"
  [ "$(blockdev --getsize64 "$loop")" -eq "$(stat -c %s "$fuse/disk")" ] || fail "$loop does not have the export's size"
}

flush_and_detach() {
  blockdev --flushbufs "$loop"
  sync "$fuse/disk" # fsync through FUSE: nbdfuse sends NBD_CMD_FLUSH
  losetup -d "$loop"
  loop=""
  umount "$fuse"
  wait "$fuse_pid" || true
  fuse_pid=""
}

mount_fs() { mount "$loop" "$mnt"; fs_mounted=1; }
umount_fs() { umount "$mnt"; fs_mounted=0; }
verify() { (cd "$mnt" && sha256sum --quiet -c "$work/manifest") || fail "tree differs after $1"; echo "verified after $1"; }
fsck_clean() { e2fsck -fn "$loop" >"$work/fsck.log" 2>&1 || fail "e2fsck -fn after $1: $(cat "$work/fsck.log")"; }

# A tree of tree_mb: nested directories, a few large files and many small ones.
left=$((tree_mb << 20)) i=0
while [ "$left" -gt 0 ]; do
  d=$src/d$((i % 7))/e$((i % 3)); mkdir -p "$d"
  size=$(( i % 10 == 0 ? 3 << 20 : (RANDOM % 64 + 1) << 10 ))
  [ "$size" -gt "$left" ] && size=$left
  head -c "$size" /dev/urandom >"$d/f$i"
  left=$((left - size)) i=$((i + 1))
done
(cd "$src" && find . -type f -print0 | sort -z | xargs -0 sha256sum) >"$work/manifest"
echo "tree: $i files, $tree_mb MiB"

"$dotnet_host" "$cli" namespace create --path "$ns" --size "${ns_mb}M" >/dev/null
start_server
attach
mkfs.ext4 -q -F "$loop"
mount_fs
cp -a "$src/." "$mnt/"
sync -f "$mnt"
verify "copy"
umount_fs
fsck_clean "copy"
flush_and_detach

stop_server
start_server
attach
fsck_clean "restart"
mount_fs
verify "restart"
# More data, then a SIGKILL once it is unmounted and flushed.
head -c $((2 << 20)) /dev/urandom >"$src/after-restart"
cp "$src/after-restart" "$mnt/after-restart"
(cd "$src" && sha256sum ./after-restart) >>"$work/manifest"
umount_fs
flush_and_detach
kill_server

start_server
attach
fsck_clean "SIGKILL"
mount_fs
verify "SIGKILL"
umount_fs
flush_and_detach
stop_server
echo "filesystem on a pfnblock export: OK"
