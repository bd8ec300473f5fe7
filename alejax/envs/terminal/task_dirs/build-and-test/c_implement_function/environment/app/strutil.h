#ifndef STRUTIL_H
#define STRUTIL_H

int count_vowels(const char *s);

#endif
