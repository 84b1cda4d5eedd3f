/* The probe runner on arm64 daemons: as runner-amd64.s (fork, execve, wait4 each program
   of argv[1..] in turn; its wait status to stdout as 4 hex digits and a newline). */
	.globl _start
	.text
_start:
	ldr	x19, [sp]		/* argc */
	add	x20, sp, #8		/* argv */
	add	x21, x20, x19, lsl #3
	add	x21, x21, #8		/* envp, after argv's NULL */
	mov	x22, #1			/* i */
	sub	sp, sp, #16		/* 0: wait status, 4: "hhhh\n" */
next:
	cmp	x22, x19
	b.ge	done
	mov	w0, #0xffff		/* what is written when fork or wait4 fails */
	str	w0, [sp]
	mov	x0, #17			/* clone(SIGCHLD, 0, 0, 0, 0): a fork */
	mov	x1, #0
	mov	x2, #0
	mov	x3, #0
	mov	x4, #0
	mov	x8, #220
	svc	#0
	cbnz	x0, parent
	ldr	x0, [x20, x22, lsl #3]	/* child: execve(argv[i], argv + i, envp) */
	add	x1, x20, x22, lsl #3
	mov	x2, x21
	mov	x8, #221
	svc	#0
	mov	x0, #127		/* it failed */
	mov	x8, #93
	svc	#0
parent:
	mov	x1, sp			/* wait4(pid, &status, 0, NULL) */
	mov	x2, #0
	mov	x3, #0
	mov	x8, #260
	svc	#0
	ldr	w0, [sp]
	add	x1, sp, #8
	adr	x3, digits
	mov	x4, #4
hex:
	and	x5, x0, #15
	ldrb	w5, [x3, x5]
	strb	w5, [x1, #-1]!
	lsr	x0, x0, #4
	subs	x4, x4, #1
	b.ne	hex
	mov	w5, #10
	strb	w5, [sp, #8]
	mov	x0, #1			/* write(1, "hhhh\n", 5) */
	add	x1, sp, #4
	mov	x2, #5
	mov	x8, #64
	svc	#0
	add	x22, x22, #1
	b	next
done:
	mov	x0, #0			/* exit(0) */
	mov	x8, #93
	svc	#0
digits:	.ascii	"0123456789abcdef"
