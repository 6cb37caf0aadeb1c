"""`python -m prresq.models`: build (cached) the tiny model and print a summary."""

from prresq.models.loading import main

main()
