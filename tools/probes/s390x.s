/* linux/s390x: exit(0) */
	.globl _start
	.text
_start:
	lghi	%r2, 0
	svc	1		/* exit */
