"""A user's own training script: the package's trainer with this team's network, loss and
data. Every launcher runs it with SCRIPT=job.py; flags pass through."""

import sys

from mynet import Net, Pinball, Rows

import train

if __name__ == "__main__":
    raise SystemExit(train.main(sys.argv[1:], model=Net, loss=Pinball, data=Rows))
