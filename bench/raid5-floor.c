// raid5-floor.c - the physical floor of a RAID5 4 KiB write against a raw 4 KiB write, with no
// block layer: only the memory operations each must do, on files in /dev/shm mapped as the pmem
// namespaces are (MAP_SHARED, 4 KiB pages), at random 4 KiB offsets.
//   raw:    one non-temporal 4 KiB store + sfence (a pmem write)
//   raid5:  two 4 KiB loads from two members and the new data XORed into a buffer (the parity of a
//           one-chunk write: old data and old parity, or the other two data chunks), then two
//           non-temporal 4 KiB stores (new data, parity) to two more members + sfence
//   loads only / stores only: the two halves of raid5 alone.
// Thread CPU time per operation (robust on a shared machine), modes alternating in short rounds;
// prints the median of ROUNDS per mode and the ratio raw/raid5 (the best IOPS ratio RAID5 can reach).
// Build: gcc -O2 -mavx512f -o raid5-floor raid5-floor.c   Run: ./raid5-floor [MiB per file] [rounds]
#include <fcntl.h>
#include <immintrin.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

enum { Page = 4096, Files = 5, Modes = 4, PerRound = 20000 };
static const char *names[Modes] = { "raw: 1 NT store", "raid5: 2 loads + XOR + 2 NT stores", "raid5 loads + XOR only", "raid5 2 NT stores only" };

static void nt_copy(char *d, const char *s)
{
    for (int i = 0; i < Page; i += 64) _mm512_stream_si512((void *)(d + i), _mm512_loadu_si512(s + i));
}

static void xor3(char *d, const char *a, const char *b, const char *c)
{
    for (int i = 0; i < Page; i += 64)
        _mm512_store_si512(d + i, _mm512_xor_si512(_mm512_xor_si512(_mm512_loadu_si512(a + i), _mm512_loadu_si512(b + i)), _mm512_loadu_si512(c + i)));
}

static double cpu_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static uint64_t rng = 88172645463325252ull;
static uint64_t next(void) { rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17; return rng; }
static int cmp(const void *a, const void *b) { double x = *(const double *)a, y = *(const double *)b; return x < y ? -1 : x > y; }

int main(int argc, char **argv)
{
    size_t bytes = (size_t)(argc > 1 ? atol(argv[1]) : 512) << 20;
    int rounds = argc > 2 ? atoi(argv[2]) : 15;
    char *m[Files], path[64];
    for (int i = 0; i < Files; i++)
    {
        snprintf(path, sizeof path, "/dev/shm/raid5-floor.%d.%d", (int)getpid(), i);
        int fd = open(path, O_RDWR | O_CREAT | O_EXCL, 0600);
        if (fd < 0 || ftruncate(fd, bytes) != 0) { perror(path); return 1; }
        m[i] = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        close(fd);
        unlink(path); // gone when the process ends
        if (m[i] == MAP_FAILED) { perror("mmap"); return 1; }
        memset(m[i], i + 1, bytes); // every page allocated, as the bench touches its namespaces
    }
    char *fresh = aligned_alloc(64, Page), *parity = aligned_alloc(64, Page);
    memset(fresh, 7, Page);
    size_t pages = bytes / Page;
    double *ns = calloc((size_t)Modes * rounds, sizeof(double));
    for (int r = 0; r < rounds; r++)
        for (int mode = 0; mode < Modes; mode++)
        {
            double t0 = cpu_now();
            for (int k = 0; k < PerRound; k++)
            {
                size_t off = next() % pages * Page;
                switch (mode)
                {
                    case 0: nt_copy(m[0] + off, fresh); _mm_sfence(); break;
                    case 1: xor3(parity, m[1] + off, m[2] + off, fresh); nt_copy(m[3] + off, fresh); nt_copy(m[4] + off, parity); _mm_sfence(); break;
                    case 2: xor3(parity, m[1] + off, m[2] + off, fresh); break;
                    case 3: nt_copy(m[3] + off, fresh); nt_copy(m[4] + off, parity); _mm_sfence(); break;
                }
            }
            ns[mode * rounds + r] = (cpu_now() - t0) / PerRound * 1e9;
        }
    double median[Modes];
    printf("| operation (4 KiB, random offsets in %zu MiB files) | CPU ns per write, median of %d rounds |\n|---|---|\n", bytes >> 20, rounds);
    for (int mode = 0; mode < Modes; mode++)
    {
        qsort(ns + mode * rounds, rounds, sizeof(double), cmp);
        median[mode] = ns[mode * rounds + rounds / 2];
        printf("| %s | %.0f |\n", names[mode], median[mode]);
    }
    printf("| **floor ratio raw / raid5** | **%.3f** |\n", median[0] / median[1]);
    return 0;
}
