# rune's exec trampoline for x86-64 Linux, no libc; its bytes are in dmz.py (tests/security/test_dmz.py assembles
# this file and compares). argv = [MAGIC, REPORT_FD or "-", PATH, ARGV0, ARGS...]; the environment is passed on.
	.intel_syntax noprefix
	.text
	.globl _start
_start:
	mov	rbx, [rsp]		# argc
	lea	r12, [rsp+8]		# argv
	lea	r13, [r12+rbx*8+8]	# envp
	cmp	rbx, 3
	jl	refuse
	mov	rsi, [r12]		# argv[0] must be MAGIC: run by rune, not as a script's interpreter
	lea	rdi, [rip+magic]
1:	mov	al, [rdi]
	cmp	al, [rsi]
	jne	refuse
	inc	rdi
	inc	rsi
	test	al, al
	jnz	1b
	mov	rsi, [r12+8]		# argv[1]: the fd to report an execve failure on, or "-"
	mov	r14, -1
	cmp	word ptr [rsi], 0x2d	# "-\0"
	je	2f
	xor	r14d, r14d
3:	movzx	eax, byte ptr [rsi]
	test	al, al
	jz	4f
	sub	eax, 0x30
	cmp	eax, 9
	ja	refuse
	imul	r14, r14, 10
	add	r14, rax
	inc	rsi
	jmp	3b
4:	mov	edi, r14d		# fcntl(fd, F_SETFD, FD_CLOEXEC): gone at a successful execve
	mov	esi, 2
	mov	edx, 1
	mov	eax, 72
	syscall
2:	mov	rdi, [r12+16]		# execve(argv[2], &argv[3], envp)
	lea	rsi, [r12+24]
	mov	rdx, r13
	mov	eax, 59
	syscall
	neg	rax
	mov	r15, rax		# errno
	test	r14, r14
	js	5f
	sub	rsp, 32			# "X" and errno in decimal, on the report fd
	lea	rcx, [rsp+32]
	mov	rdi, rcx
	mov	r8d, 10
6:	xor	edx, edx
	div	r8
	add	dl, 0x30
	dec	rdi
	mov	[rdi], dl
	test	rax, rax
	jnz	6b
	dec	rdi
	mov	byte ptr [rdi], 0x58
	mov	rsi, rdi
	mov	rdx, rcx
	sub	rdx, rdi
	mov	edi, r14d
	mov	eax, 1
	syscall
	mov	edi, 1			# reported: exit_group(1), as runc's init exits when the user's program fails to exec
	jmp	7f
5:	mov	edi, 126		# unreported: exit_group(127 for ENOENT, else 126), as a shell reports a failed exec
	cmp	r15, 2
	jne	7f
	mov	edi, 127
7:	mov	eax, 231
	syscall
refuse:
	mov	edi, 2
	lea	rsi, [rip+message]
	mov	edx, message_end - message
	mov	eax, 1
	syscall
	mov	edi, 126
	mov	eax, 231
	syscall
magic:
	.asciz	"rune-exec"
message:
	.ascii	"rune: this is rune's exec trampoline; it runs only as rune starts a container's program\n"
message_end:
