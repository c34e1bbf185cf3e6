/* Word count: the text on stdin, a JSON object {"word": count, ...} on stdout.

   A word is a maximal run of ASCII letters and digits, lower-cased; every other byte separates
   words. Keys are sorted (byte order) so that two replicas of a fragment write the same bytes,
   and the output of several fragments merges with the `merge-counts` aggregation. Exit 1 when
   memory runs out (the engine reports its memory limit), 0 otherwise. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct entry {
    char *word;
    size_t len;
    unsigned long long count;
};

static struct entry *table;
static size_t capacity = 1024; /* a power of two */
static size_t used;

static unsigned long long hash(const char *s, size_t n) {
    unsigned long long h = 1469598103934665603ULL; /* FNV-1a */
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ULL;
    }
    return h;
}

static void die(const char *why) {
    fprintf(stderr, "wordcount: %s\n", why);
    exit(1);
}

static void grow(void) {
    size_t old_capacity = capacity;
    struct entry *old = table;
    capacity *= 2;
    table = calloc(capacity, sizeof *table);
    if (!table) die("out of memory");
    for (size_t i = 0; i < old_capacity; i++) {
        if (!old[i].word) continue;
        size_t j = hash(old[i].word, old[i].len) & (capacity - 1);
        while (table[j].word) j = (j + 1) & (capacity - 1);
        table[j] = old[i];
    }
    free(old);
}

static void add(const char *w, size_t n) {
    if ((used + 1) * 4 > capacity * 3) grow();
    size_t j = hash(w, n) & (capacity - 1);
    while (table[j].word) {
        if (table[j].len == n && memcmp(table[j].word, w, n) == 0) {
            table[j].count++;
            return;
        }
        j = (j + 1) & (capacity - 1);
    }
    char *copy = malloc(n);
    if (!copy) die("out of memory");
    memcpy(copy, w, n);
    table[j].word = copy;
    table[j].len = n;
    table[j].count = 1;
    used++;
}

static int by_word(const void *a, const void *b) {
    const struct entry *x = a, *y = b;
    size_t n = x->len < y->len ? x->len : y->len;
    int c = memcmp(x->word, y->word, n);
    if (c) return c;
    return (x->len > y->len) - (x->len < y->len);
}

static int is_word_byte(int c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

int main(void) {
    static char buf[65536];
    char *word = NULL;
    size_t word_len = 0, word_cap = 0;
    size_t n;

    table = calloc(capacity, sizeof *table);
    if (!table) die("out of memory");
    while ((n = fread(buf, 1, sizeof buf, stdin)) > 0) {
        for (size_t i = 0; i < n; i++) {
            int c = (unsigned char)buf[i];
            if (is_word_byte(c)) {
                if (word_len == word_cap) {
                    word_cap = word_cap ? word_cap * 2 : 64;
                    word = realloc(word, word_cap);
                    if (!word) die("out of memory");
                }
                word[word_len++] = (char)(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
            } else if (word_len) {
                add(word, word_len);
                word_len = 0;
            }
        }
    }
    if (ferror(stdin)) die("cannot read stdin");
    if (word_len) add(word, word_len);

    struct entry *sorted = malloc((used ? used : 1) * sizeof *sorted);
    if (!sorted) die("out of memory");
    size_t k = 0;
    for (size_t i = 0; i < capacity; i++)
        if (table[i].word) sorted[k++] = table[i];
    qsort(sorted, k, sizeof *sorted, by_word);

    putchar('{');
    for (size_t i = 0; i < k; i++) {
        if (i) putchar(',');
        putchar('"');
        fwrite(sorted[i].word, 1, sorted[i].len, stdout);
        printf("\":%llu", sorted[i].count);
    }
    putchar('}');
    putchar('\n');
    if (fflush(stdout) != 0 || ferror(stdout)) die("cannot write stdout");
    return 0;
}
