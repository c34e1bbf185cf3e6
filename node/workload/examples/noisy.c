/* Writes 1 MiB to stderr, then "done" on stdout (to show stderr is captured bounded). */
#include <stdio.h>
#include <string.h>

int main(void) {
    static char line[1024];
    memset(line, 'e', sizeof line - 1);
    line[sizeof line - 1] = '\n';
    for (int i = 0; i < 1024; i++) fwrite(line, 1, sizeof line, stderr);
    puts("done");
    return 0;
}
