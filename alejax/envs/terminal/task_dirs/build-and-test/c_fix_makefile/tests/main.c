#include <math.h>
#include <stdio.h>
#include <stdlib.h>

/* Prints the sum of the base-10 logarithms of its arguments. */
int main(int argc, char **argv) {
    double sum = 0;
    for (int i = 1; i < argc; i++) sum += log10(atof(argv[i]));
    printf("%.3f\n", sum);
    return 0;
}
