"""`python -m prresq.analysis RUN_OR_SWEEP_DIR [--tags val/srcc ...]`: last logged value per run and tag."""

from prresq.analysis.runs import main

if __name__ == "__main__":
    main()
