#ifndef STACK_H
#define STACK_H

#define STACK_CAPACITY 4

struct stack {
    int items[STACK_CAPACITY];
    int size;
};

void stack_init(struct stack *s);
int stack_push(struct stack *s, int value); /* 0, or -1 when full */
int stack_pop(struct stack *s, int *value); /* 0, or -1 when empty */

#endif
