import sys

try:
    from .cli import main
except KeyboardInterrupt:  # Ctrl-C while the modules load: end like any interrupted command
    sys.exit(130)

main()
