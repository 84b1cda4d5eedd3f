/* 32-bit arm: who runs it? exit(0) when the kernel does (an arm64 CPU with AArch32: uname
   says "aarch64" or "armv8l"), exit(1) when uname names an ARMv5-v7 CPU, as QEMU's arm
   emulator (or a 32-bit arm kernel) does. */
	.arm
	.globl _start
	.text
_start:
	sub	sp, sp, #392	/* struct utsname: 6 fields of 65 bytes */
	mov	r0, sp
	mov	r7, #122	/* newuname */
	svc	#0
	mov	r0, #0
	ldr	r1, [sp, #260]	/* machine: first 4 bytes */
	ldr	r2, =0x766d7261	/* "armv", little-endian */
	cmp	r1, r2
	bne	1f
	ldrb	r1, [sp, #264]	/* the version digit */
	cmp	r1, #'8'
	movlo	r0, #1
1:	mov	r7, #1		/* exit */
	svc	#0
	.ltorg
