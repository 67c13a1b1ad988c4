using System.Runtime.InteropServices;

namespace PfnBlock.Interop;

/// <summary>
/// The parts of Ceph's C client libraries the <c>rbd:</c> device calls: librados
/// (&lt;rados/librados.h&gt;: a cluster handle, its configuration, a pool's I/O context, blocklisting)
/// and librbd (&lt;rbd/librbd.h&gt;: images, asynchronous I/O with completions, the exclusive lock).
/// Handles are opaque pointers (<c>rados_t</c>, <c>rados_ioctx_t</c>, <c>rbd_image_t</c>,
/// <c>rbd_completion_t</c>) kept as <see cref="nint"/>; every call returns 0 or a negative errno.
/// NuGet has no binding of these libraries, so the declarations are ours, kept to the C names.
/// </summary>
/// <remarks>The libraries are loaded on first call (Debian package librbd1, which brings librados2);
/// a machine without them fails that call with <see cref="DllNotFoundException"/>.</remarks>
internal static unsafe partial class Librbd
{
    private const string Rados = "librados.so.2";
    private const string Rbd = "librbd.so.1";

    // <rbd/librbd.h> enum rbd_lock_mode_t
    public const int RBD_LOCK_MODE_EXCLUSIVE = 0;

    // ---- librados ----

    /// <summary><c>int rados_create(rados_t *cluster, const char * const id)</c>: a handle for client <c>client.ID</c> (null: admin).</summary>
    [LibraryImport(Rados, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int rados_create(out nint cluster, string? id);

    /// <summary><c>int rados_conf_read_file(rados_t cluster, const char *path)</c>: null searches the default places.</summary>
    [LibraryImport(Rados, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int rados_conf_read_file(nint cluster, string? path);

    /// <summary><c>int rados_conf_set(rados_t cluster, const char *option, const char *value)</c>.</summary>
    [LibraryImport(Rados, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int rados_conf_set(nint cluster, string option, string value);

    /// <summary><c>int rados_conf_get(rados_t cluster, const char *option, char *buf, size_t len)</c>.</summary>
    [LibraryImport(Rados, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int rados_conf_get(nint cluster, string option, byte* buf, nuint len);

    /// <summary><c>int rados_connect(rados_t cluster)</c>: bounded by <c>client_mount_timeout</c>.</summary>
    [LibraryImport(Rados)]
    public static partial int rados_connect(nint cluster);

    /// <summary><c>void rados_shutdown(rados_t cluster)</c>: also frees a handle that never connected.</summary>
    [LibraryImport(Rados)]
    public static partial void rados_shutdown(nint cluster);

    /// <summary><c>int rados_ioctx_create(rados_t cluster, const char *pool_name, rados_ioctx_t *ioctx)</c>.</summary>
    [LibraryImport(Rados, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int rados_ioctx_create(nint cluster, string pool, out nint ioctx);

    /// <summary><c>void rados_ioctx_destroy(rados_ioctx_t io)</c>.</summary>
    [LibraryImport(Rados)]
    public static partial void rados_ioctx_destroy(nint ioctx);

    /// <summary><c>int rados_cluster_fsid(rados_t cluster, char *buf, size_t len)</c>: the cluster's fsid (a uuid string); its length, or -ERANGE.</summary>
    [LibraryImport(Rados)]
    public static partial int rados_cluster_fsid(nint cluster, byte* buf, nuint len);

    /// <summary><c>int64_t rados_ioctx_get_id(rados_ioctx_t io)</c>: the pool's id, which a pool keeps when renamed.</summary>
    [LibraryImport(Rados)]
    public static partial long rados_ioctx_get_id(nint ioctx);

    // ---- librbd: images ----

    /// <summary><c>int rbd_create(rados_ioctx_t io, const char *name, uint64_t size, int *order)</c> (order 0: the default, 4 MiB objects).</summary>
    [LibraryImport(Rbd, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int rbd_create(nint ioctx, string name, ulong size, ref int order);

    /// <summary><c>int rbd_open(rados_ioctx_t io, const char *name, rbd_image_t *image, const char *snap_name)</c>.</summary>
    [LibraryImport(Rbd, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int rbd_open(nint ioctx, string name, out nint image, string? snapName);

    /// <summary><c>int rbd_open_read_only(…)</c>: no watch on the header, no lock, writes refused by librbd.</summary>
    [LibraryImport(Rbd, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int rbd_open_read_only(nint ioctx, string name, out nint image, string? snapName);

    /// <summary><c>int rbd_close(rbd_image_t image)</c>: waits for the image's in-flight requests.</summary>
    [LibraryImport(Rbd)]
    public static partial int rbd_close(nint image);

    /// <summary><c>int rbd_get_size(rbd_image_t image, uint64_t *size)</c>.</summary>
    [LibraryImport(Rbd)]
    public static partial int rbd_get_size(nint image, out ulong size);

    /// <summary><c>int rbd_get_stripe_unit(rbd_image_t image, uint64_t *stripe_unit)</c>: the object size unless fancy striping.</summary>
    [LibraryImport(Rbd)]
    public static partial int rbd_get_stripe_unit(nint image, out ulong stripeUnit);

    /// <summary>
    /// <c>int rbd_get_id(rbd_image_t image, char *id, size_t id_len)</c>: the image's id, made at
    /// creation and kept across renames (a new image of the same name gets another); -ERANGE when
    /// <c>id_len</c> is too small.
    /// </summary>
    [LibraryImport(Rbd)]
    public static partial int rbd_get_id(nint image, byte* id, nuint idLen);

    // ---- librbd: the exclusive lock ----

    /// <summary>
    /// <c>int rbd_lock_acquire(rbd_image_t image, rbd_lock_mode_t lock_mode)</c>: takes the image's
    /// exclusive lock and keeps it (librbd then refuses other clients' requests to hand it over).
    /// A holder whose watch has expired is broken (and blocklisted) by librbd; a live one is not.
    /// </summary>
    [LibraryImport(Rbd)]
    public static partial int rbd_lock_acquire(nint image, int lockMode);

    /// <summary><c>int rbd_lock_release(rbd_image_t image)</c>.</summary>
    [LibraryImport(Rbd)]
    public static partial int rbd_lock_release(nint image);

    /// <summary>
    /// <c>int rbd_is_exclusive_lock_owner(rbd_image_t image, int *is_owner)</c>: whether this client
    /// holds the lock now, from librbd's local state (no round trip). A client whose lock was broken
    /// (and which was blocklisted) reads 0 only once librbd has noticed: with no I/O, Ceph 16 still
    /// read 1 more than 20 s after <c>ceph osd blocklist add</c>, hence the owner probe.
    /// </summary>
    [LibraryImport(Rbd)]
    public static partial int rbd_is_exclusive_lock_owner(nint image, out int isOwner);

    /// <summary><c>int rbd_lock_get_owners(rbd_image_t, rbd_lock_mode_t *mode, char **owners, size_t *max_owners)</c>.</summary>
    [LibraryImport(Rbd)]
    public static partial int rbd_lock_get_owners(nint image, out int lockMode, byte** owners, ref nuint maxOwners);

    /// <summary><c>void rbd_lock_get_owners_cleanup(char **lock_owners, size_t lock_owner_count)</c>.</summary>
    [LibraryImport(Rbd)]
    public static partial void rbd_lock_get_owners_cleanup(byte** owners, nuint count);

    // ---- librbd: asynchronous I/O ----

    /// <summary>
    /// <c>int rbd_aio_create_completion(void *cb_arg, rbd_callback_t complete_cb, rbd_completion_t *c)</c>;
    /// <c>rbd_callback_t</c> is <c>void (*)(rbd_completion_t cb, void *arg)</c>, called on a librbd thread.
    /// </summary>
    [LibraryImport(Rbd)]
    public static partial int rbd_aio_create_completion(nint arg, delegate* unmanaged[Cdecl]<nint, nint, void> callback, out nint completion);

    /// <summary><c>ssize_t rbd_aio_get_return_value(rbd_completion_t c)</c>: bytes for reads, 0 or -errno otherwise.</summary>
    [LibraryImport(Rbd)]
    public static partial nint rbd_aio_get_return_value(nint completion);

    /// <summary><c>void rbd_aio_release(rbd_completion_t c)</c>: allowed inside the completion callback.</summary>
    [LibraryImport(Rbd)]
    public static partial void rbd_aio_release(nint completion);

    /// <summary><c>int rbd_aio_readv(rbd_image_t image, const struct iovec *iov, int iovcnt, uint64_t off, rbd_completion_t c)</c>.</summary>
    [LibraryImport(Rbd)]
    public static partial int rbd_aio_readv(nint image, iovec* iov, int iovcnt, ulong offset, nint completion);

    /// <summary><c>int rbd_aio_writev(rbd_image_t image, const struct iovec *iov, int iovcnt, uint64_t off, rbd_completion_t c)</c>.</summary>
    [LibraryImport(Rbd)]
    public static partial int rbd_aio_writev(nint image, iovec* iov, int iovcnt, ulong offset, nint completion);

    /// <summary><c>int rbd_aio_flush(rbd_image_t image, rbd_completion_t c)</c>: completes once every write completed before it is durable.</summary>
    [LibraryImport(Rbd)]
    public static partial int rbd_aio_flush(nint image, nint completion);

    /// <summary><c>int rbd_aio_discard(rbd_image_t image, uint64_t off, uint64_t len, rbd_completion_t c)</c>: may leave partial objects' old data in place.</summary>
    [LibraryImport(Rbd)]
    public static partial int rbd_aio_discard(nint image, ulong offset, ulong length, nint completion);

    /// <summary><c>int rbd_aio_write_zeroes(rbd_image_t image, uint64_t off, size_t len, rbd_completion_t c, int zero_flags, int op_flags)</c>: any range reads back as zeros.</summary>
    [LibraryImport(Rbd)]
    public static partial int rbd_aio_write_zeroes(nint image, ulong offset, nuint length, nint completion, int zeroFlags, int opFlags);
}
