from services.thumbnails.app import main

# Guarded: the drawing pool's workers are spawned, and import this module again.
if __name__ == "__main__":
    main()
