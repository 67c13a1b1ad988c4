// first-touch.c - what the first access to each page of a fresh mapping costs on this host.
// Maps FILE (MAP_SHARED | MAP_POPULATE: every page table entry the guest kernel can fill is
// filled), then copies random 4 KiB blocks out of it, each offset depending on the last copy
// (a QD1 reader), and prints the rate second by second. With "touch" it first writes every page
// once, untimed, as 01-membw does before its loops.
// On a host where the hypervisor shadows the guest's page tables (a PVM guest), a page's first
// access in a new process is a trip to the hypervisor that the guest never sees as a page fault:
// the untouched rates start far below the touched ones and climb as the pages warm up. That is
// what a `pfnblock bench` or fio run pays in its first seconds on a fresh mapping.
// Build: gcc -O2 -o first-touch bench/first-touch.c
// Run:   ./first-touch /dev/shm/F 1024 5 touch; ./first-touch /dev/shm/F 1024 5   (MiB, seconds)
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
  if (argc < 4) { fprintf(stderr, "usage: %s FILE MIB SECONDS [touch]\n", argv[0]); return 2; }
  size_t size = strtoull(argv[2], NULL, 0) << 20, pages = size / 4096;
  int seconds = atoi(argv[3]), touch = argc > 4 && strcmp(argv[4], "touch") == 0;
  int fd = open(argv[1], O_RDWR | O_CREAT, 0600);
  if (fd < 0 || posix_fallocate(fd, 0, (off_t)size)) { perror(argv[1]); return 1; }
  uint8_t *m = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, 0);
  if (m == MAP_FAILED) { perror("mmap"); return 1; }
  if (touch) for (size_t p = 0; p < pages; p++) m[p * 4096] = 1;
  uint8_t *buf = aligned_alloc(4096, 64 * 4096);
  memset(buf, 0, 64 * 4096);
  uint64_t x = 88172645463325252ull;
  long n = 0;
  for (int s = 1; s <= seconds; s++) {
    long start = n;
    double t0 = now();
    while (now() - t0 < 1.0) {
      for (int j = 0; j < 256; j++, n++) {
        x ^= x << 13; x ^= x >> 7; x ^= x << 17;
        size_t p = (x + buf[(n & 63) * 4096]) % pages; // the next offset waits for the last copy
        memcpy(buf + (n & 63) * 4096, m + p * 4096, 4096);
      }
    }
    printf("second %d: %.3f M copies/s%s\n", s, (n - start) / (now() - t0) / 1e6, touch ? " (pages touched first)" : "");
  }
  return 0;
}
