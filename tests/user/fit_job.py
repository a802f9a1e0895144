"""train.fit from a user's Python: prints the summary's figures as JSON, or the FitError."""

import json
import sys

from mynet import Net, Pinball, Rows

import train

if __name__ == "__main__":
    options = json.loads(sys.argv[1])
    try:
        summary = train.fit(model=Net, loss=Pinball, data=Rows, **options)
    except train.FitError as e:
        print(json.dumps({"exit_code": e.exit_code, "message": str(e)}))
        raise SystemExit(0) from None
    print(json.dumps({"eval_loss": summary["eval_loss"], "steps": summary["steps"],
                      "converged": summary["converged"]}))
