from utils import shout


def main():
    print(shout("app v2"))


if __name__ == "__main__":
    main()
