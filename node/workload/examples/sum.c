/* Numeric column: one number per line on stdin, {"sum": S, "count": N} on stdout.

   Blank lines are skipped; any other line that is not a whole number (strtod must consume it
   all, surrounding blanks aside) is an error: its line number goes to stderr and the exit code
   is 1, so a bad record fails the fragment instead of silently skewing the sum. The sum is a
   double added in input order, printed with 17 significant digits (round-trips exactly). The
   mean is the aggregation's job (sum of sums / sum of counts). */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(void) {
    static char line[4096];
    double sum = 0.0;
    unsigned long long count = 0, lineno = 0;

    while (fgets(line, sizeof line, stdin)) {
        lineno++;
        size_t len = strlen(line);
        if (len == sizeof line - 1 && line[len - 1] != '\n' && !feof(stdin)) {
            fprintf(stderr, "sum: line %llu is longer than %zu bytes\n", lineno, sizeof line - 2);
            return 1;
        }
        char *p = line;
        while (*p && isspace((unsigned char)*p)) p++;
        if (!*p) continue;
        char *end;
        double v = strtod(p, &end);
        while (*end && isspace((unsigned char)*end)) end++;
        if (end == p || *end) {
            fprintf(stderr, "sum: line %llu is not a number\n", lineno);
            return 1;
        }
        sum += v;
        count++;
    }
    if (ferror(stdin)) {
        fputs("sum: cannot read stdin\n", stderr);
        return 1;
    }
    printf("{\"sum\":%.17g,\"count\":%llu}\n", sum, count);
    return fflush(stdout) == 0 ? 0 : 1;
}
