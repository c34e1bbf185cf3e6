/* Allocates without bound (to show the memory limit): 1 MiB at a time, each one touched and
   chained to the last (so the compiler cannot drop the allocations), until malloc fails, then
   aborts (a trap). Never writes a result. */
#include <stdlib.h>
#include <string.h>

static void *volatile last;

int main(void) {
    for (;;) {
        char *p = malloc(1 << 20);
        if (!p) abort();
        memset(p, 1, 1 << 20);
        memcpy(p, (void *)&last, sizeof(void *));
        last = p;
    }
}
