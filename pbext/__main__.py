"""
C{python -m pbext}: see L{pbext.cli}.
"""

from pbext.cli import main

if __name__ == "__main__":
    main()
