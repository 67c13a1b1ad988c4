// copy-floor.c - the physical floor of `pfnblock copy` from an O_DIRECT file into pmem: the same
// io_uring O_DIRECT reads of one file (same block size, same depth, IORING_OP_READ as fio issues
// them, a plain ring as fio 3.33 sets up), with nothing of PfnBlock in between, only the
// destination changing:
//   reuse       a buffer of bs x depth, slot i reading into its own bs every time (what fio does);
//   shm         successive ranges of a MAP_SHARED mapping of a written /dev/shm file as large as the
//               copy, mapped afresh each rep and its page tables filled before the clock starts
//               (what the copy must do: its namespace is such a mapping, populated at open);
//   shm-cold    the same mapping without filling the page tables (each page faults in at its read);
//   shm-fresh   a new /dev/shm file each rep: tmpfs allocates and zeroes every page during the reads
//               (the copy into a fresh namespace);
//   anon        successive ranges of populated private anonymous memory (distinct pages, not tmpfs);
//   huge        as shm, but the file in HUGE_DIR (a tmpfs mounted huge=always: 2 MiB pages).
// The modes alternate within each rep and their order rotates from rep to rep. Per mode: MiB/s of
// wall time from the first submission to the last completion, the process's system CPU time and
// minor faults per GiB, and the median over the reps of the per-rep ratio to `reuse`.
// Build: gcc -O2 -o copy-floor copy-floor.c
// Run:   ./copy-floor FILE [MiB (1024)] [bs KiB (1024)] [depth (4)] [reps (5)] [HUGE_DIR or -] [first (0)]
//        (first: the mode rep 1 starts with, so that a caller running one rep at a time can rotate)
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/io_uring.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22
#endif
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

enum { Reuse, Shm, ShmCold, ShmFresh, Anon, Huge, Modes };
static const char *names[Modes] = { "reuse", "shm", "shm-cold", "shm-fresh", "anon", "huge" };

struct ring
{
    int fd;
    unsigned *sq_tail, *sq_mask, *sq_array, *cq_head, *cq_tail, *cq_mask;
    struct io_uring_sqe *sqes;
    struct io_uring_cqe *cqes;
};

static void die(const char *what) { perror(what); exit(1); }

static void ring_setup(struct ring *r, unsigned entries)
{
    struct io_uring_params p;
    memset(&p, 0, sizeof p);
    r->fd = (int)syscall(__NR_io_uring_setup, entries, &p);
    if (r->fd < 0) die("io_uring_setup");
    size_t sq_bytes = p.sq_off.array + p.sq_entries * sizeof(unsigned);
    size_t cq_bytes = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
    if (!(p.features & IORING_FEAT_SINGLE_MMAP)) { fprintf(stderr, "needs IORING_FEAT_SINGLE_MMAP (5.4)\n"); exit(1); }
    size_t bytes = sq_bytes > cq_bytes ? sq_bytes : cq_bytes;
    char *sq = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, r->fd, IORING_OFF_SQ_RING);
    if (sq == MAP_FAILED) die("mmap sq ring");
    r->sq_tail = (unsigned *)(sq + p.sq_off.tail);
    r->sq_mask = (unsigned *)(sq + p.sq_off.ring_mask);
    r->sq_array = (unsigned *)(sq + p.sq_off.array);
    r->cq_head = (unsigned *)(sq + p.cq_off.head);
    r->cq_tail = (unsigned *)(sq + p.cq_off.tail);
    r->cq_mask = (unsigned *)(sq + p.cq_off.ring_mask);
    r->cqes = (struct io_uring_cqe *)(sq + p.cq_off.cqes);
    r->sqes = mmap(NULL, p.sq_entries * sizeof(struct io_uring_sqe), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, r->fd, IORING_OFF_SQES);
    if (r->sqes == MAP_FAILED) die("mmap sqes");
}

static void prep_read(struct ring *r, int fd, void *dst, unsigned len, uint64_t off, uint64_t slot)
{
    unsigned tail = *r->sq_tail, i = tail & *r->sq_mask;
    struct io_uring_sqe *s = &r->sqes[i];
    memset(s, 0, sizeof *s);
    s->opcode = IORING_OP_READ;
    s->fd = fd;
    s->addr = (uint64_t)(uintptr_t)dst;
    s->len = len;
    s->off = off;
    s->user_data = slot;
    r->sq_array[i] = i;
    atomic_store_explicit((_Atomic unsigned *)r->sq_tail, tail + 1, memory_order_release);
}

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

// Reads [0, size) of fd with `depth` reads of `bs` in flight; read k lands at dst(k).
static double run(struct ring *r, int fd, size_t size, unsigned bs, unsigned depth, char *base, int reuse)
{
    size_t next = 0;
    unsigned pending = 0, inflight = 0;
    double t0 = now();
    for (unsigned slot = 0; slot < depth && next < size; slot++, next += bs, pending++, inflight++)
        prep_read(r, fd, reuse ? base + (size_t)slot * bs : base + next, bs, next, slot);
    while (inflight > 0)
    {
        if (syscall(__NR_io_uring_enter, r->fd, pending, 1, IORING_ENTER_GETEVENTS, NULL, 0) < 0 && errno != EINTR) die("io_uring_enter");
        pending = 0;
        unsigned head = *r->cq_head, tail = atomic_load_explicit((_Atomic unsigned *)r->cq_tail, memory_order_acquire);
        for (; head != tail; head++)
        {
            struct io_uring_cqe *c = &r->cqes[head & *r->cq_mask];
            if (c->res != (int)bs) { fprintf(stderr, "read returned %d (%s)\n", c->res, c->res < 0 ? strerror(-c->res) : "short"); exit(1); }
            unsigned slot = (unsigned)c->user_data;
            inflight--;
            if (next < size)
            {
                prep_read(r, fd, reuse ? base + (size_t)slot * bs : base + next, bs, next, slot);
                next += bs;
                pending++;
                inflight++;
            }
        }
        atomic_store_explicit((_Atomic unsigned *)r->cq_head, head, memory_order_release);
    }
    return now() - t0;
}

// A file of `size` bytes in dir, written in full unless `fresh`; returns its fd (unlinked already).
static int shm_file(const char *dir, size_t size, int fresh)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/copy-floor.%d", dir, (int)getpid());
    int fd = open(path, O_RDWR | O_CREAT | O_EXCL, 0600);
    if (fd < 0) die(path);
    unlink(path); // gone when the last mapping and fd are
    if (ftruncate(fd, (off_t)size) != 0) die("ftruncate");
    if (!fresh)
    {
        char *m = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (m == MAP_FAILED) die("mmap");
        memset(m, 0x5a, size); // every page allocated, as a written namespace's are
        munmap(m, size);
    }
    return fd;
}

static char *map_file(int fd, size_t size, size_t align, int populate)
{
    // Over-map and trim so a huge tmpfs can back the mapping with 2 MiB pages (aligned addresses only).
    char *raw = mmap(NULL, size + align, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (raw == MAP_FAILED) die("mmap reserve");
    char *at = (char *)(((uintptr_t)raw + align - 1) & ~(uintptr_t)(align - 1));
    char *m = mmap(at, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, 0);
    if (m == MAP_FAILED) die("mmap file");
    if (at > raw) munmap(raw, (size_t)(at - raw));
    munmap(at + size, (size_t)(raw + size + align - (at + size)));
    if (populate && madvise(m, size, MADV_POPULATE_READ) != 0) die("madvise(MADV_POPULATE_READ)");
    return m;
}

static int cmp(const void *a, const void *b) { double x = *(const double *)a, y = *(const double *)b; return x < y ? -1 : x > y; }
static double median(double *v, int n) { qsort(v, n, sizeof *v, cmp); return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2; }

int main(int argc, char **argv)
{
    if (argc < 2) { fprintf(stderr, "usage: %s FILE [MiB] [bs KiB] [depth] [reps] [HUGE_DIR|-] [first]\n", argv[0]); return 2; }
    size_t size = (size_t)(argc > 2 ? atol(argv[2]) : 1024) << 20;
    unsigned bs = (unsigned)(argc > 3 ? atoi(argv[3]) : 1024) << 10;
    unsigned depth = argc > 4 ? (unsigned)atoi(argv[4]) : 4;
    int reps = argc > 5 ? atoi(argv[5]) : 5;
    const char *huge_dir = argc > 6 && strcmp(argv[6], "-") != 0 ? argv[6] : NULL;
    int first = argc > 7 ? atoi(argv[7]) : 0;
    int modes = huge_dir ? Modes : Huge;
    if (size % bs != 0) { fprintf(stderr, "size must be a multiple of bs\n"); return 2; }
    int fd = open(argv[1], O_RDONLY | O_DIRECT);
    if (fd < 0) die(argv[1]);
    struct ring r;
    ring_setup(&r, depth < 8 ? 8 : depth);

    char *reuse = aligned_alloc(4096, (size_t)bs * depth);
    memset(reuse, 1, (size_t)bs * depth);
    int written = shm_file("/dev/shm", size, 0);
    int huge = huge_dir ? shm_file(huge_dir, size, 0) : -1;
    char *anon = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (anon == MAP_FAILED) die("mmap anon");
    madvise(anon, size, MADV_NOHUGEPAGE); // 4 KiB pages, as /dev/shm's
    if (madvise(anon, size, MADV_POPULATE_WRITE) != 0) die("madvise(MADV_POPULATE_WRITE)");

    double *mibs = calloc((size_t)Modes * reps, sizeof(double)), *ratio = calloc((size_t)Modes * reps, sizeof(double));
    double *sys = calloc((size_t)Modes * reps, sizeof(double)), *minflt = calloc((size_t)Modes * reps, sizeof(double));
    printf("# %zu MiB of %s, bs %u KiB, depth %u, IORING_OP_READ, %d reps, modes alternating (order rotates)\n", size >> 20, argv[1], bs >> 10, depth, reps);
    for (int rep = 0; rep < reps; rep++)
    {
        printf("rep %d:", rep + 1);
        for (int k = 0; k < modes; k++)
        {
            int mode = (k + rep + first) % modes;
            char *base = reuse;
            int fresh = -1;
            if (mode == Shm || mode == ShmCold) base = map_file(written, size, 4096, mode == Shm);
            else if (mode == ShmFresh) { fresh = shm_file("/dev/shm", size, 1); base = map_file(fresh, size, 4096, 0); }
            else if (mode == Huge) base = map_file(huge, size, 2 << 20, 1);
            else if (mode == Anon) base = anon;
            struct rusage u0, u1;
            getrusage(RUSAGE_SELF, &u0);
            double s = run(&r, fd, size, bs, depth, base, mode == Reuse);
            getrusage(RUSAGE_SELF, &u1);
            double gib = size / 1073741824.0;
            mibs[mode * reps + rep] = size / 1048576.0 / s;
            sys[mode * reps + rep] = ((u1.ru_stime.tv_sec - u0.ru_stime.tv_sec) + (u1.ru_stime.tv_usec - u0.ru_stime.tv_usec) * 1e-6) * 1e3 / gib;
            minflt[mode * reps + rep] = (u1.ru_minflt - u0.ru_minflt) / gib;
            if (base != reuse && base != anon) munmap(base, size);
            if (fresh >= 0) close(fresh);
        }
        for (int mode = 0; mode < modes; mode++)
        {
            ratio[mode * reps + rep] = 100 * mibs[mode * reps + rep] / mibs[Reuse * reps + rep];
            printf(" %s %.0f MiB/s (%.1f %%)", names[mode], mibs[mode * reps + rep], ratio[mode * reps + rep]);
        }
        printf("\n");
        fflush(stdout);
    }
    printf("| destination | MiB/s, median [min..max] | / reuse, median of per-rep ratios | system ms per GiB | minor faults per GiB |\n|---|---|---|---|---|\n");
    for (int mode = 0; mode < modes; mode++)
    {
        double *m = mibs + mode * reps;
        double med = median(m, reps);
        printf("| %s | %.0f [%.0f..%.0f] | %.1f %% | %.0f | %.0f |\n", names[mode], med, m[0], m[reps - 1],
               median(ratio + mode * reps, reps), median(sys + mode * reps, reps), median(minflt + mode * reps, reps));
    }
    for (int mode = 0; mode < modes; mode++)
        printf("RESULT probe %s MiB/s=%.1f ratio=%.1f\n", names[mode], median(mibs + mode * reps, reps), median(ratio + mode * reps, reps));
    return 0;
}
