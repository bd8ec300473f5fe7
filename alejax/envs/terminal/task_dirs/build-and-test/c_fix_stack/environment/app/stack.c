#include "stack.h"

void stack_init(struct stack *s) { s->size = 0; }

int stack_push(struct stack *s, int value) {
    if (s->size > STACK_CAPACITY) return -1;
    s->items[s->size++] = value;
    return 0;
}

int stack_pop(struct stack *s, int *value) {
    if (s->size == 0) return -1;
    *value = s->items[s->size];
    s->size--;
    return 0;
}
