from qco_tune.cli.main import main

main()
