/* linux/riscv64: exit(0) */
	.globl _start
	.text
_start:
	li	a7, 93		/* exit */
	li	a0, 0
	ecall
