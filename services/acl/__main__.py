from services.acl.app import main

main()
