#include <stdio.h>

#include "strutil.h"

static int failures = 0;

static void expect(const char *s, int want) {
    int got = count_vowels(s);
    if (got != want) {
        printf("count_vowels(\"%s\") = %d, want %d\n", s, got, want);
        failures++;
    }
}

int main(void) {
    expect("", 0);
    expect("banana", 3);
    expect("AEIOU aeiou", 10);
    printf(failures ? "FAILED\n" : "all passed\n");
    return failures != 0;
}
