"""`python -m bench [training] [serving] [feedback] [options]`: print numbers (no pass/fail);
all by default. Options after the names go to each benchmark (`python -m bench serving --help`)."""

from __future__ import annotations

import sys

from bench import feedback, serving, training

SUITES = {"training": training.main, "serving": serving.main, "feedback": feedback.main}


def main() -> None:
    args = sys.argv[1:]
    names = []
    while args and not args[0].startswith("-"):
        name = args.pop(0)
        if name not in SUITES:
            sys.exit(f"unknown benchmark {name!r}; choose from {', '.join(SUITES)}")
        names.append(name)
    for name in names or list(SUITES):
        print(f"== {name}")
        SUITES[name](args)


if __name__ == "__main__":
    main()
