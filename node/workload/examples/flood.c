/* Writes output without end (to show the output limit): stops only when a write fails. */
#include <stdio.h>
#include <string.h>

int main(void) {
    static char buf[4096];
    memset(buf, 'y', sizeof buf);
    for (;;) {
        if (fwrite(buf, 1, sizeof buf, stdout) != sizeof buf || fflush(stdout) != 0) return 1;
    }
}
