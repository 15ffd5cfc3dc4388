from services.dicom.app import main

main()
