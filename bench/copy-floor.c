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
//   scattered   as shm, but the file's pages were written in a random order, so that pages next to
//               each other in the file are not next to each other in memory (a fragmented machine);
//   anon        successive ranges of populated private anonymous memory (distinct pages, not tmpfs);
//   huge        (-H DIR) as shm, the file in DIR, a tmpfs mounted huge=always: 2 MiB pages, each
//               physically contiguous, as a real pmem namespace is throughout;
//   ns          (-n FILE:OFFSET) as shm, into FILE's bytes from OFFSET on: the very pages a copy into
//               that namespace lands in (its data area), so the copy can be compared page for page.
// Modes alternate within each rep and their order rotates from rep to rep. Per mode: MiB/s of wall
// time from the first submission to the last completion, the process's system CPU time and minor
// faults per GiB, the requests the file's block device completed per MiB (the destination's
// physical layout shows here: a 1 MiB read into scattered 4 KiB pages is 256 segments, more than a
// virtio disk's 254, so the block layer splits it in two; physically adjacent pages merge into one
// segment, and adjacent reads into one request of up to max_sectors_kb), and the median over the
// reps of the per-rep ratio to `reuse`.
// Build: gcc -O2 -o copy-floor copy-floor.c
// Run:   ./copy-floor [-s MiB (1024)] [-b bs KiB (1024)] [-d depth (4)] [-r reps (5)] [-H HUGE_DIR]
//                     [-n NSFILE:OFFSET] [-m mode,mode,...] [-f first] FILE
//        (-f: the mode rep 1 starts with, so that a caller running one rep at a time can rotate)
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
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22
#endif
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

enum { Reuse, Shm, ShmCold, ShmFresh, Scattered, Anon, Huge, Ns, Modes };
static const char *names[Modes] = { "reuse", "shm", "shm-cold", "shm-fresh", "scattered", "anon", "huge", "ns" };

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
    s->user_data = slot | (uint64_t)len << 32; // the length comes back with the completion, to check it
    r->sq_array[i] = i;
    atomic_store_explicit((_Atomic unsigned *)r->sq_tail, tail + 1, memory_order_release);
}

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

// The last read may be short when bs does not divide the size (a bs of 254 pages, say).
static unsigned chunk(size_t next, size_t size, unsigned bs) { return size - next < bs ? (unsigned)(size - next) : bs; }

// Reads [0, size) of fd with `depth` reads of `bs` in flight; read k lands at dst(k).
static double run(struct ring *r, int fd, size_t size, unsigned bs, unsigned depth, char *base, int reuse)
{
    size_t next = 0;
    unsigned pending = 0, inflight = 0;
    double t0 = now();
    for (unsigned slot = 0; slot < depth && next < size; slot++, next += bs, pending++, inflight++)
        prep_read(r, fd, reuse ? base + (size_t)slot * bs : base + next, chunk(next, size, bs), next, slot);
    while (inflight > 0)
    {
        if (syscall(__NR_io_uring_enter, r->fd, pending, 1, IORING_ENTER_GETEVENTS, NULL, 0) < 0 && errno != EINTR) die("io_uring_enter");
        pending = 0;
        unsigned head = *r->cq_head, tail = atomic_load_explicit((_Atomic unsigned *)r->cq_tail, memory_order_acquire);
        for (; head != tail; head++)
        {
            struct io_uring_cqe *c = &r->cqes[head & *r->cq_mask];
            if (c->res != (int)(c->user_data >> 32)) { fprintf(stderr, "read returned %d (%s)\n", c->res, c->res < 0 ? strerror(-c->res) : "short"); exit(1); }
            unsigned slot = (uint32_t)c->user_data;
            inflight--;
            if (next < size)
            {
                prep_read(r, fd, reuse ? base + (size_t)slot * bs : base + next, chunk(next, size, bs), next, slot);
                next += bs;
                pending++;
                inflight++;
            }
        }
        atomic_store_explicit((_Atomic unsigned *)r->cq_head, head, memory_order_release);
    }
    return now() - t0;
}

static uint64_t rng = 88172645463325252ull;
static uint64_t next_random(void) { rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17; return rng; }

// A file of `size` bytes in dir, written in full unless `fresh` (its pages in a random order when
// `shuffled`); returns its fd (unlinked already).
static int shm_file(const char *dir, size_t size, int fresh, int shuffled)
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
        size_t pages = size / 4096, *order = malloc(pages * sizeof *order);
        for (size_t i = 0; i < pages; i++) order[i] = i;
        for (size_t i = pages - 1; shuffled && i > 0; i--)
        {
            size_t j = next_random() % (i + 1), t = order[i];
            order[i] = order[j];
            order[j] = t;
        }
        // Every page allocated, as a written namespace's are, in the order tmpfs will place them.
        for (size_t i = 0; i < pages; i++) memset(m + order[i] * 4096, 0x5a, 4096);
        free(order);
        munmap(m, size);
    }
    return fd;
}

static char *map_file(int fd, size_t size, off_t offset, size_t align, int populate)
{
    // Over-map and trim so a huge tmpfs can back the mapping with 2 MiB pages (aligned addresses only).
    char *raw = mmap(NULL, size + align, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (raw == MAP_FAILED) die("mmap reserve");
    char *at = (char *)(((uintptr_t)raw + align - 1) & ~(uintptr_t)(align - 1));
    char *m = mmap(at, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, offset);
    if (m == MAP_FAILED) die("mmap file");
    if (at > raw) munmap(raw, (size_t)(at - raw));
    munmap(at + size, (size_t)(raw + size + align - (at + size)));
    if (populate && madvise(m, size, MADV_POPULATE_READ) != 0) die("madvise(MADV_POPULATE_READ)");
    return m;
}

// Reads completed by the block device holding the file (its /sys/dev/block stat), or -1.
static long device_reads(dev_t dev)
{
    char path[64];
    snprintf(path, sizeof path, "/sys/dev/block/%u:%u/stat", major(dev), minor(dev));
    FILE *f = fopen(path, "r");
    long reads = -1;
    if (f && fscanf(f, "%ld", &reads) != 1) reads = -1;
    if (f) fclose(f);
    return reads;
}

static int cmp(const void *a, const void *b) { double x = *(const double *)a, y = *(const double *)b; return x < y ? -1 : x > y; }
static double median(double *v, int n) { qsort(v, n, sizeof *v, cmp); return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2; }

static void usage(const char *self)
{
    fprintf(stderr, "usage: %s [-s MiB] [-b KiB] [-d depth] [-r reps] [-H HUGE_DIR] [-n NSFILE:OFFSET] [-m modes] [-f first] FILE\n", self);
    exit(2);
}

int main(int argc, char **argv)
{
    size_t size = 1024ul << 20;
    unsigned bs = 1024 << 10, depth = 4;
    int reps = 5, first = 0, opt;
    const char *huge_dir = NULL, *ns_spec = NULL, *mode_list = "reuse,shm,shm-cold,shm-fresh,scattered,anon,huge,ns";
    while ((opt = getopt(argc, argv, "s:b:d:r:H:n:m:f:")) != -1)
        switch (opt)
        {
            case 's': size = (size_t)atol(optarg) << 20; break;
            case 'b': bs = (unsigned)atoi(optarg) << 10; break;
            case 'd': depth = (unsigned)atoi(optarg); break;
            case 'r': reps = atoi(optarg); break;
            case 'H': huge_dir = optarg; break;
            case 'n': ns_spec = optarg; break;
            case 'm': mode_list = optarg; break;
            case 'f': first = atoi(optarg); break;
            default: usage(argv[0]);
        }
    if (optind != argc - 1 || reps < 1 || depth < 1 || depth > 256 || bs == 0) usage(argv[0]);
    if (size % 4096 != 0 || bs % 4096 != 0) { fprintf(stderr, "size and bs must be multiples of 4 KiB\n"); return 2; }
    // The modes asked for, in order; `reuse` always (the ratios are to it), huge and ns only with their option.
    int on[Modes] = { [Reuse] = 1 }, modes = 0, order[Modes];
    for (int m = 0; m < Modes; m++)
    {
        const char *hit = strstr(mode_list, names[m]);
        size_t n = strlen(names[m]);
        while (hit && ((hit > mode_list && hit[-1] != ',') || (hit[n] != ',' && hit[n] != 0))) hit = strstr(hit + 1, names[m]);
        if (hit) on[m] = 1;
    }
    on[Huge] &= huge_dir != NULL;
    on[Ns] &= ns_spec != NULL;
    for (int m = 0; m < Modes; m++)
        if (on[m]) order[modes++] = m;
    const char *file = argv[optind];
    int fd = open(file, O_RDONLY | O_DIRECT);
    if (fd < 0) die(file);
    struct stat st;
    if (fstat(fd, &st) != 0) die("fstat");
    struct ring r;
    ring_setup(&r, depth < 8 ? 8 : depth);

    char *reuse = aligned_alloc(4096, (size_t)bs * depth);
    memset(reuse, 1, (size_t)bs * depth);
    int written = on[Shm] || on[ShmCold] ? shm_file("/dev/shm", size, 0, 0) : -1;
    int scattered = on[Scattered] ? shm_file("/dev/shm", size, 0, 1) : -1;
    int huge = on[Huge] ? shm_file(huge_dir, size, 0, 0) : -1;
    int ns = -1;
    off_t ns_offset = 0;
    if (on[Ns])
    {
        char *colon = strrchr(ns_spec, ':');
        if (!colon) usage(argv[0]);
        *colon = 0;
        ns_offset = atoll(colon + 1);
        ns = open(ns_spec, O_RDWR);
        if (ns < 0) die(ns_spec);
        struct stat ns_st;
        if (fstat(ns, &ns_st) != 0 || ns_st.st_size < ns_offset + (off_t)size || ns_offset % 4096 != 0)
        {
            fprintf(stderr, "%s holds no %zu bytes at page-aligned offset %lld\n", ns_spec, size, (long long)ns_offset);
            return 2;
        }
    }
    char *anon = NULL;
    if (on[Anon])
    {
        anon = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (anon == MAP_FAILED) die("mmap anon");
        madvise(anon, size, MADV_NOHUGEPAGE); // 4 KiB pages, as /dev/shm's
        if (madvise(anon, size, MADV_POPULATE_WRITE) != 0) die("madvise(MADV_POPULATE_WRITE)");
    }

    double *mibs = calloc((size_t)Modes * reps, sizeof(double)), *ratio = calloc((size_t)Modes * reps, sizeof(double));
    double *sys = calloc((size_t)Modes * reps, sizeof(double)), *minflt = calloc((size_t)Modes * reps, sizeof(double));
    double *requests = calloc((size_t)Modes * reps, sizeof(double));
    printf("# %zu MiB of %s, bs %u KiB, depth %u, IORING_OP_READ, %d reps, modes alternating (order rotates)\n", size >> 20, file, bs >> 10, depth, reps);
    for (int rep = 0; rep < reps; rep++)
    {
        printf("rep %d:", rep + 1);
        for (int k = 0; k < modes; k++)
        {
            int mode = order[(k + rep + first) % modes];
            char *base = reuse;
            int fresh = -1;
            switch (mode)
            {
                case Shm: case ShmCold: base = map_file(written, size, 0, 4096, mode == Shm); break;
                case ShmFresh: fresh = shm_file("/dev/shm", size, 1, 0); base = map_file(fresh, size, 0, 4096, 0); break;
                case Scattered: base = map_file(scattered, size, 0, 4096, 1); break;
                case Huge: base = map_file(huge, size, 0, 2 << 20, 1); break;
                case Ns: base = map_file(ns, size, ns_offset, 2 << 20, 1); break; // 2 MiB-aligned: huge pages where the file has them
                case Anon: base = anon; break;
            }
            struct rusage u0, u1;
            getrusage(RUSAGE_SELF, &u0);
            long reads0 = device_reads(st.st_dev);
            double s = run(&r, fd, size, bs, depth, base, mode == Reuse);
            long reads1 = device_reads(st.st_dev);
            getrusage(RUSAGE_SELF, &u1);
            requests[mode * reps + rep] = reads0 < 0 ? 0 : (reads1 - reads0) / (size / 1048576.0);
            double gib = size / 1073741824.0;
            mibs[mode * reps + rep] = size / 1048576.0 / s;
            sys[mode * reps + rep] = ((u1.ru_stime.tv_sec - u0.ru_stime.tv_sec) + (u1.ru_stime.tv_usec - u0.ru_stime.tv_usec) * 1e-6) * 1e3 / gib;
            minflt[mode * reps + rep] = (u1.ru_minflt - u0.ru_minflt) / gib;
            if (base != reuse && base != anon) munmap(base, size);
            if (fresh >= 0) close(fresh);
        }
        for (int k = 0; k < modes; k++)
        {
            int mode = order[k];
            ratio[mode * reps + rep] = 100 * mibs[mode * reps + rep] / mibs[Reuse * reps + rep];
            printf(" %s %.0f MiB/s (%.1f %%, %.2f req/MiB)", names[mode], mibs[mode * reps + rep], ratio[mode * reps + rep], requests[mode * reps + rep]);
        }
        printf("\n");
        fflush(stdout);
    }
    printf("| destination | MiB/s, median [min..max] | / reuse, median of per-rep ratios | system ms per GiB | minor faults per GiB | device requests per MiB |\n|---|---|---|---|---|---|\n");
    for (int k = 0; k < modes; k++)
    {
        int mode = order[k];
        double *m = mibs + mode * reps;
        double med = median(m, reps);
        printf("| %s | %.0f [%.0f..%.0f] | %.1f %% | %.0f | %.0f | %.2f |\n", names[mode], med, m[0], m[reps - 1],
               median(ratio + mode * reps, reps), median(sys + mode * reps, reps), median(minflt + mode * reps, reps), median(requests + mode * reps, reps));
    }
    for (int k = 0; k < modes; k++)
    {
        int mode = order[k];
        printf("RESULT probe %s MiB/s=%.1f ratio=%.1f requests/MiB=%.2f\n", names[mode], median(mibs + mode * reps, reps), median(ratio + mode * reps, reps), median(requests + mode * reps, reps));
    }
    return 0;
}
