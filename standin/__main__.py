"""``python -m standin --port 9090``: serve the Yespo stand-in until SIGINT or SIGTERM."""

from standin.server import main

if __name__ == "__main__":
    main()
