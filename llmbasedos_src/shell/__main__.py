from .luca import main

main()
