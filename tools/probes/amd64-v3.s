/* linux/amd64/v3: instructions of x86-64-v3 (AVX2, FMA, BMI1, BMI2, MOVBE), then exit(0).
   AVX also needs the kernel to have enabled it (XSAVE): either missing raises SIGILL. */
	.globl _start
	.text
_start:
	vpaddd	%ymm0, %ymm0, %ymm0
	vfmadd231ps %ymm0, %ymm0, %ymm0
	andn	%eax, %eax, %eax
	shlx	%eax, %eax, %eax
	movbe	(%rsp), %eax
	mov	$60, %eax
	xor	%edi, %edi
	syscall
