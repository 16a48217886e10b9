"""Allow ``python -m echoscale``."""

from echoscale.cli import main

if __name__ == "__main__":
    main()
