"""`python -m trainer --config tiny --data MIXTURE --out RUN [key=value ...]`."""

from trainer.train import main

main()
