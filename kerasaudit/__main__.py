from kerasaudit.cli.app import main

main()
