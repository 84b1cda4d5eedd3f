/* fib(N) computed recursively: a call-heavy arm64 benchmark for the test image
 * mpc/debian-python:13. Built with -mbranch-protection=standard, every call of fib() signs
 * and authenticates its return address (paciasp/autiasp), so QEMU's choice of pointer
 * authentication algorithm (QEMU_CPU=max,pauth-impdef=on vs the default QARMA) decides how
 * fast it runs under emulation.
 * Usage: fib-pac [N]   (default 33; prints fib(N)) */
#include <stdio.h>
#include <stdlib.h>

static long fib(long n)
{
    return n < 2 ? n : fib(n - 1) + fib(n - 2);
}

int main(int argc, char **argv)
{
    long n = argc > 1 ? strtol(argv[1], NULL, 10) : 33;

    if (n < 0 || n > 90) {
        fprintf(stderr, "usage: fib-pac [N]   (0 <= N <= 90)\n");
        return 2;
    }
    printf("%ld\n", fib(n));
    return 0;
}
