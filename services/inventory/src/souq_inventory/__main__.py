from souq_inventory.main import main

main()
