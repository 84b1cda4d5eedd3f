/* The probe runner on amd64 daemons: runs each program named in argv[1..] in turn (fork,
   execve, wait4) and writes its wait status to stdout as 4 hex digits and a newline.
   A child whose execve fails (no emulator: ENOEXEC; a handler without the F flag: ENOENT)
   exits 127. One container runs every probe, rather than one container each. */
	.globl _start
	.text
_start:
	mov	(%rsp), %r12		/* argc */
	lea	8(%rsp), %r13		/* argv */
	lea	8(%r13,%r12,8), %r14	/* envp, after argv's NULL */
	mov	$1, %r15		/* i */
	sub	$16, %rsp		/* 0: wait status, 4: "hhhh\n" */
next:
	cmp	%r12, %r15
	jge	done
	movl	$0xffff, (%rsp)		/* what is written when fork or wait4 fails */
	mov	$57, %eax		/* fork */
	syscall
	test	%rax, %rax
	jnz	parent
	mov	(%r13,%r15,8), %rdi	/* child: execve(argv[i], argv + i, envp) */
	lea	(%r13,%r15,8), %rsi
	mov	%r14, %rdx
	mov	$59, %eax
	syscall
	mov	$127, %edi		/* it failed */
	mov	$60, %eax
	syscall
parent:
	mov	%rax, %rdi		/* wait4(pid, &status, 0, NULL) */
	mov	%rsp, %rsi
	xor	%edx, %edx
	xor	%r10d, %r10d
	mov	$61, %eax
	syscall
	mov	(%rsp), %eax
	lea	8(%rsp), %rdi
	mov	$4, %ecx
hex:
	dec	%rdi
	mov	%eax, %edx
	and	$15, %edx
	movzbl	digits(%rdx), %edx
	mov	%dl, (%rdi)
	shr	$4, %eax
	loop	hex
	movb	$10, 8(%rsp)
	mov	$1, %edi		/* write(1, "hhhh\n", 5) */
	lea	4(%rsp), %rsi
	mov	$5, %edx
	mov	$1, %eax
	syscall
	inc	%r15
	jmp	next
done:
	mov	$60, %eax		/* exit(0) */
	xor	%edi, %edi
	syscall

	.section .rodata
digits:	.ascii	"0123456789abcdef"
