// qd1-ceiling.c - what one thread can do with random 4 KiB blocks of a /dev/shm mapping (how pmem
// namespaces are mapped here: MAP_SHARED, 4 KiB pages) when each block must wait for the one before,
// as a queue-depth-1 I/O does, against the independent loop of ../shared/bench/peers/01-membw.sh.
//   read  indep: memcpy of a random block into one of 16 private buffers; the next offset comes from
//                the random generator alone, so the out-of-order core starts the next block's TLB
//                walk and cache misses while this one is still copying (01-membw's rnd4k_memcpy_rd)
//   read  dep:   the same, but the next offset also depends on the last byte copied: a QD1 reader
//                cannot know its next request before the current one completed
//   write indep: AVX-512 non-temporal 4 KiB store + sfence (01-membw's rnd4k_nt512_wr)
//   write drain: the same + mfence, so that the next block starts only after this one's stores drained
//                (an upper bound on serialisation: an I/O stack's completion need not wait that long)
//   read  8 ways: eight random blocks copied side by side, 256 B of each in turn (a plugged batch on a
//                memory device, src/PfnBlock/Memory/InterleavedCopy.cs), the next eight after these
//   write 8 ways: the same with non-temporal stores and one sfence per eight blocks
// Wall-clock operations per second over SECONDS per mode, the modes alternating in ROUNDS rounds;
// prints the median per mode and the ratios dep/indep, drain/indep.
// Build: gcc -O2 -mavx512f -o qd1-ceiling qd1-ceiling.c   Run: ./qd1-ceiling FILE [MiB] [rounds] [seconds]
#include <fcntl.h>
#include <immintrin.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

enum { Page = 4096, Modes = 6, Batch = 256, Ways = 8, MaxRounds = 64 };
static const char *names[Modes] = { "read indep (01-membw rnd4k_memcpy_rd)", "read dep (QD1: next after this)", "write indep (01-membw rnd4k_nt512_wr)", "write drain (+mfence)",
                                    "read 8 ways (a plugged batch)", "write 8 ways (+1 sfence)" };

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static inline uint64_t xorshift(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13; x ^= x >> 7; x ^= x << 17;
    return *s = x;
}

static void nt_copy(char *d, const char *s)
{
    for (int i = 0; i < Page; i += 256)
    {
        __m512i a = _mm512_loadu_si512(s + i), b = _mm512_loadu_si512(s + i + 64);
        __m512i c = _mm512_loadu_si512(s + i + 128), e = _mm512_loadu_si512(s + i + 192);
        _mm512_stream_si512((void *)(d + i), a); _mm512_stream_si512((void *)(d + i + 64), b);
        _mm512_stream_si512((void *)(d + i + 128), c); _mm512_stream_si512((void *)(d + i + 192), e);
    }
}

// Ways blocks side by side, 256 B of each in turn; nt: streaming stores (destinations 64-byte aligned).
static void ways_copy(char **d, char **s, int nt)
{
    for (int at = 0; at < Page; at += 256)
        for (int j = 0; j < Ways; j++)
        {
            const char *p = s[j] + at; char *q = d[j] + at;
            __m512i a = _mm512_loadu_si512(p), b = _mm512_loadu_si512(p + 64), c = _mm512_loadu_si512(p + 128), e = _mm512_loadu_si512(p + 192);
            if (nt) { _mm512_stream_si512((void *)q, a); _mm512_stream_si512((void *)(q + 64), b); _mm512_stream_si512((void *)(q + 128), c); _mm512_stream_si512((void *)(q + 192), e); }
            else { _mm512_storeu_si512(q, a); _mm512_storeu_si512(q + 64, b); _mm512_storeu_si512(q + 128, c); _mm512_storeu_si512(q + 192, e); }
        }
}

static int cmp(const void *a, const void *b) { double x = *(const double *)a, y = *(const double *)b; return (x > y) - (x < y); }

int main(int argc, char **argv)
{
    if (argc < 2) { fprintf(stderr, "usage: %s FILE [MiB] [rounds] [seconds]\n", argv[0]); return 2; }
    size_t size = (size_t)(argc > 2 ? atol(argv[2]) : 1024) << 20;
    int rounds = argc > 3 ? atoi(argv[3]) : 5;
    double secs = argc > 4 ? atof(argv[4]) : 1.0;
    if (rounds < 1 || rounds > MaxRounds) { fprintf(stderr, "rounds must be 1..%d\n", MaxRounds); return 2; }
    int fd = open(argv[1], O_RDWR | O_CREAT, 0600);
    if (fd < 0 || ftruncate(fd, (off_t)size) != 0) { perror(argv[1]); return 1; }
    char *map = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, 0);
    if (map == MAP_FAILED) { perror("mmap"); return 1; }
    memset(map, 0x5a, size); // every page allocated and written once, as the benches' namespaces are
    char *priv = aligned_alloc(Page, 16 * Page);
    memset(priv, 1, 16 * Page);
    size_t blocks = size / Page;
    uint64_t seed = 0x9e3779b97f4a7c15ULL, sink = 0;
    double rate[Modes][MaxRounds];
    for (int r = 0; r < rounds; r++)
        for (int m = 0; m < Modes; m++)
        {
            uint64_t ops = 0, dep = 0;
            double t0 = now(), t1;
            do
            {
                if (m >= 4)
                {
                    for (int k = 0; k < Batch; k += Ways)
                    {
                        char *dev[Ways], *mem[Ways];
                        for (int j = 0; j < Ways; j++) { dev[j] = map + (xorshift(&seed) % blocks) * Page; mem[j] = priv + ((k + j) & 15) * Page; }
                        if (m == 4) { ways_copy(mem, dev, 0); sink += (unsigned char)mem[0][Page - 1]; }
                        else { ways_copy(dev, mem, 1); _mm_sfence(); }
                    }
                    ops += Batch;
                    continue;
                }
                for (int k = 0; k < Batch; k++)
                {
                    size_t off = ((xorshift(&seed) ^ dep) % blocks) * Page;
                    char *buf = priv + (k & 15) * Page;
                    switch (m)
                    {
                    case 0: memcpy(buf, map + off, Page); sink += (unsigned char)buf[Page - 1]; break;
                    case 1: memcpy(buf, map + off, Page); dep = (unsigned char)buf[Page - 1] & 1; sink += dep; break;
                    case 2: nt_copy(map + off, buf); _mm_sfence(); break;
                    default: nt_copy(map + off, buf); _mm_sfence(); _mm_mfence(); break;
                    }
                }
                ops += Batch;
            } while ((t1 = now()) - t0 < secs);
            rate[m][r] = ops / (t1 - t0);
        }
    double med[Modes];
    for (int m = 0; m < Modes; m++)
    {
        qsort(rate[m], rounds, sizeof(double), cmp);
        med[m] = rounds % 2 ? rate[m][rounds / 2] : (rate[m][rounds / 2 - 1] + rate[m][rounds / 2]) / 2;
        printf("%-40s %.3f M/s [%.3f..%.3f]\n", names[m], med[m] / 1e6, rate[m][0] / 1e6, rate[m][rounds - 1] / 1e6);
    }
    printf("read dep/indep %.3f, write drain/indep %.3f, read 8 ways/indep %.3f, write 8 ways/indep %.3f\n", med[1] / med[0], med[3] / med[2], med[4] / med[0], med[5] / med[2]);
    if (sink == 42) fputc(' ', stderr);
    munmap(map, size);
    close(fd);
    return 0;
}
