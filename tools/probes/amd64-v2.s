/* linux/amd64/v2: instructions of x86-64-v2 (POPCNT, SSE4.2, SSSE3), then exit(0).
   A CPU (or emulator) without them raises SIGILL: the container exits 132. */
	.globl _start
	.text
_start:
	popcnt	%rax, %rax
	crc32l	%eax, %eax
	pshufb	%xmm0, %xmm0
	mov	$60, %eax
	xor	%edi, %edi
	syscall
