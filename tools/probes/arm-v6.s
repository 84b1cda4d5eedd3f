/* linux/arm/v6: REV (ARMv6), then exit(0) */
	.arm
	.globl _start
	.text
_start:
	rev	r0, r0
	mov	r7, #1
	mov	r0, #0
	svc	#0
