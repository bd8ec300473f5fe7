#!/bin/bash
sed -i 's/if (s->size > STACK_CAPACITY)/if (s->size >= STACK_CAPACITY)/; s/\*value = s->items\[s->size\];/*value = s->items[s->size - 1];/' stack.c
make test
