"""The smallest script of train.main: the trainer itself, run by a launcher as SCRIPT=."""

import sys

import train

if __name__ == "__main__":
    raise SystemExit(train.main(sys.argv[1:]))
