import sys

from bridge.shipper.child import main

sys.exit(main(sys.argv[1:]))
