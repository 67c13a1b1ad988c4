/* blkio: drives libpmemblk for the interop tests (compiled by the test with gcc -lpmemblk).
 *   blkio write POOL FILE   write FILE (n whole blocks) to LBAs 0..n-1, then print nblock
 *   blkio read POOL FILE N  read LBAs 0..N-1 into FILE
 *   blkio zero POOL LBA     pmemblk_set_zero
 *   blkio info POOL         print "nblock N bsize B" */
#include <libpmemblk.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv) {
    if (argc < 3) { fprintf(stderr, "usage: blkio write|read|zero|info POOL ...\n"); return 2; }
    PMEMblkpool *p = pmemblk_open(argv[2], 0);
    if (!p) { fprintf(stderr, "pmemblk_open: %s\n", pmemblk_errormsg()); return 1; }
    size_t bs = pmemblk_bsize(p), n = pmemblk_nblock(p);
    char *buf = malloc(bs);
    int rc = 0;
    if (!strcmp(argv[1], "write")) {
        FILE *f = fopen(argv[3], "rb");
        long long lba = 0;
        while (fread(buf, 1, bs, f) == bs) {
            if (pmemblk_write(p, buf, lba)) { fprintf(stderr, "write %lld: %s\n", lba, pmemblk_errormsg()); rc = 1; break; }
            lba++;
        }
        fclose(f);
    } else if (!strcmp(argv[1], "read")) {
        FILE *f = fopen(argv[3], "wb");
        long long count = atoll(argv[4]);
        for (long long lba = 0; lba < count; lba++) {
            if (pmemblk_read(p, buf, lba)) { fprintf(stderr, "read %lld: %s\n", lba, pmemblk_errormsg()); rc = 1; break; }
            fwrite(buf, 1, bs, f);
        }
        fclose(f);
    } else if (!strcmp(argv[1], "zero")) {
        if (pmemblk_set_zero(p, atoll(argv[3]))) { fprintf(stderr, "set_zero: %s\n", pmemblk_errormsg()); rc = 1; }
    }
    printf("nblock %zu bsize %zu\n", n, bs);
    free(buf);
    pmemblk_close(p);
    return rc;
}
