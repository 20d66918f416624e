# Python custom autograd Functions on the C tape (cg_record_custom).
# Included into _core.pyx so it can reach Tensor internals.
