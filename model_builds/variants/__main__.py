"""`python -m model_builds.variants`: build every enabled variant of params.yaml."""

from __future__ import annotations

from model_builds.variants.build import main

if __name__ == "__main__":
    main()
