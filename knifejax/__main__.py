from knifejax.cli import main
from knifejax.xla_cpu import apply_xla_cpu_flags

if __name__ == "__main__":
    apply_xla_cpu_flags()  # before the command's first JAX computation
    main()
