from outlay.cli import main

main()
