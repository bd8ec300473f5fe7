#!/bin/bash
cat > strutil.c <<'EOF'
#include <ctype.h>

#include "strutil.h"

int count_vowels(const char *s) {
    int n = 0;
    for (; *s; s++) {
        switch (tolower((unsigned char)*s)) {
        case 'a': case 'e': case 'i': case 'o': case 'u':
            n++;
        }
    }
    return n;
}
EOF
make test
