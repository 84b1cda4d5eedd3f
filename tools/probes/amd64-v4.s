/* linux/amd64/v4: instructions of x86-64-v4 (AVX-512 F, BW, CD, DQ, VL), then exit(0). */
	.globl _start
	.text
_start:
	vpaddd	%zmm0, %zmm0, %zmm0
	vpaddb	%zmm0, %zmm0, %zmm0
	vplzcntd %zmm0, %zmm0
	vpmullq	%zmm0, %zmm0, %zmm0
	vpaddq	%ymm16, %ymm16, %ymm16
	mov	$60, %eax
	xor	%edi, %edi
	syscall
