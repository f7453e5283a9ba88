"""Lowerings of planned qtrain IR: the numpy interpreter (golden model) and the C / LLVM IR emitters."""
