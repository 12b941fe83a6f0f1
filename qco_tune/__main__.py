from qco_tune.cli import main

main()
