#include <stdio.h>

#include "stack.h"

static struct stack s;

int main(void) {
    int v = 0, failures = 0;
    stack_init(&s);
    for (int i = 1; i <= STACK_CAPACITY; i++)
        if (stack_push(&s, i * 10) != 0) { printf("push %d failed\n", i); failures++; }
    if (stack_push(&s, 99) != -1) { printf("push onto a full stack did not fail\n"); failures++; }
    for (int i = STACK_CAPACITY; i >= 1; i--)
        if (stack_pop(&s, &v) != 0 || v != i * 10) { printf("pop gave %d, want %d\n", v, i * 10); failures++; }
    if (stack_pop(&s, &v) != -1) { printf("pop from an empty stack did not fail\n"); failures++; }
    printf(failures ? "FAILED\n" : "all passed\n");
    return failures != 0;
}
